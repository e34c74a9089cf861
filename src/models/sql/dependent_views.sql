-- Views and materialized views that depend on a relation, directly or through other views,
-- with their definitions, parents before children (by depth). Run with search_path set to
-- pg_catalog so that pg_get_viewdef qualifies every name and the text recreates the same view.
WITH RECURSIVE target AS (
    SELECT c.oid
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relname = $2
),
deps (oid, depth) AS (
    SELECT r.ev_class, 1
    FROM pg_catalog.pg_depend AS d
    JOIN pg_catalog.pg_rewrite AS r ON r.oid = d.objid
    WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refobjid IN (SELECT oid FROM target)
      AND r.ev_class NOT IN (SELECT oid FROM target)
    UNION
    SELECT r.ev_class, deps.depth + 1
    FROM deps
    JOIN pg_catalog.pg_depend AS d
      ON d.refobjid = deps.oid
     AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
    JOIN pg_catalog.pg_rewrite AS r ON r.oid = d.objid
    WHERE r.ev_class <> deps.oid
)
SELECT n.nspname::text AS schema_name,
       c.relname::text AS view_name,
       c.relkind::text AS kind,
       pg_catalog.pg_get_viewdef(c.oid)::text AS definition,
       pg_catalog.max(deps.depth)::int AS depth
FROM deps
JOIN pg_catalog.pg_class AS c ON c.oid = deps.oid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm')
GROUP BY c.oid, n.nspname, c.relname, c.relkind
ORDER BY depth, schema_name, view_name
