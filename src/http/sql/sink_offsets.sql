-- Where the sink's group has written up to, per partition of one topic. $1: group, $2: topic.
select partition, next_offset, updated_at
from etl.sink_offsets
where consumer_group = $1 and topic = $2
order by partition
