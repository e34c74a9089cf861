-- Column names of a relation in column order; $1 is a regclass text such as pg_temp."x".
SELECT a.attname::text
FROM pg_catalog.pg_attribute AS a
WHERE a.attrelid = pg_catalog.to_regclass($1)
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY a.attnum
