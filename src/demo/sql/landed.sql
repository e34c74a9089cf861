-- Rows of `transactions_sink` read from $1 at or after the given offsets: $2 partitions,
-- $3 the first offset of the run in each.
select count(*)
from public.transactions_sink as s
join unnest($2::int4[], $3::int8[]) as w(kafka_partition, first_offset)
    on s.kafka_partition = w.kafka_partition and s.kafka_offset >= w.first_offset
where s.kafka_topic = $1
