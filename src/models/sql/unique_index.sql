-- A valid unique index (or primary key) of table $1.$2 whose only key column is $3, not partial
-- and not on an expression: PostgreSQL keeps the column unique, so a unique test has nothing to
-- find. Its name, schema-qualified.
SELECT format('%I.%I', n.nspname, ic.relname)
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indrelid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
WHERE n.nspname = $1
  AND c.relname = $2
  AND a.attname = $3
  AND i.indisunique
  AND i.indisvalid
  AND i.indislive
  AND i.indnkeyatts = 1
  AND i.indpred IS NULL
  AND i.indexprs IS NULL
ORDER BY 1
LIMIT 1
