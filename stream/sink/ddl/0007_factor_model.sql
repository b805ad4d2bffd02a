-- Factor model (stream/model): how much each complaint factor moves the overall
-- satisfaction score, per district ('*' = network-wide), as a time series.
-- One row per model, factor and publication. `shard` is the set of satisfaction
-- partitions the publishing worker learns from: with several workers, combine
-- the newest row of each shard by inverse-variance weighting (1 / stderr^2);
-- `cxstream explain` does. Retried insert blocks are identical and dropped by
-- the insert deduplication window.
CREATE TABLE IF NOT EXISTS {db}.factor_coefficients
(
    published_at  DateTime64(3, 'UTC'),
    as_of         DateTime64(3, 'UTC'),   -- event time of the newest satisfaction event the model learned
    shard         LowCardinality(String),
    district      LowCardinality(String),
    province      LowCardinality(String),
    city          LowCardinality(String),
    factor        LowCardinality(String),
    coefficient   Float64,                -- score points per unit of the factor
    stderr        Float64,                -- standard error of the coefficient, points
    n             UInt64,                 -- satisfaction events learned
    n_eff         Float64,                -- equally weighted events the (forgetting) fit is worth
    intercept     Float64,                -- score with every factor at 0 (baseline levels)
    residual_sd   Float64                 -- typical prediction error, points
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(published_at)
ORDER BY (district, factor, published_at, shard)
TTL toDateTime(published_at) + INTERVAL {raw_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Factor exposures: per district and hour of event time, how many satisfaction
-- events, their score sum and each factor's sum. Rows are increments (one per
-- publication); read with sum(). Mean exposure in a window = sum(value_sum) /
-- sum(samples) (samples repeats on every factor row of a publication).
CREATE TABLE IF NOT EXISTS {db}.factor_exposure
(
    bucket_start  DateTime('UTC'),
    district      LowCardinality(String),
    province      LowCardinality(String),
    city          LowCardinality(String),
    factor        LowCardinality(String),
    samples       UInt64,
    score_sum     Float64,
    value_sum     Float64,
    shard         LowCardinality(String),
    published_at  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(bucket_start)
ORDER BY (district, bucket_start, factor)
TTL bucket_start + INTERVAL {raw_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- The newest snapshot of a worker's models per consumer group and partition set,
-- with the next offset of each partition it has not learned. A restarted worker
-- with the same partitions loads it and learns the events stored after it.
CREATE TABLE IF NOT EXISTS {db}.factor_model_snapshots
(
    group_id    String,
    partitions  Array(UInt16),
    offsets     Array(UInt64),
    taken_at    DateTime64(3, 'UTC'),
    learned     UInt64,
    blob        String
)
ENGINE = ReplacingMergeTree(taken_at)
ORDER BY (group_id, partitions);
