-- Rejects of messages read from $1 at or after the given offsets, by kind: $2 partitions,
-- $3 the first offset of the run in each.
select r.error_kind, count(*)
from public.transactions_rejected as r
join unnest($2::int4[], $3::int8[]) as w(kafka_partition, first_offset)
    on r.kafka_partition = w.kafka_partition and r.kafka_offset >= w.first_offset
where r.kafka_topic = $1
group by r.error_kind
order by r.error_kind
