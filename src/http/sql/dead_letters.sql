-- The newest dead letters, optionally of one kind, with how many there are of each kind.
-- $1: kind or null, $2: limit.
select json_build_object(
    'kinds', (
        select coalesce(json_agg(k order by k.count desc, k.kind), '[]')
        from (select error_kind as kind, count(*) as count
              from public.transactions_rejected group by error_kind) as k),
    'newest', (
        select coalesce(json_agg(d order by d.rejected_at desc, d.id desc), '[]')
        from (select id, kafka_topic as topic, kafka_partition as partition, kafka_offset as "offset",
                     error_kind as kind, error_message as message,
                     encode(substring(payload from 1 for 300), 'escape') as payload, rejected_at
              from public.transactions_rejected
              where $1::text is null or error_kind = $1
              order by rejected_at desc, id desc
              limit $2) as d)
)
