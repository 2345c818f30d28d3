"""Pure domain logic: no Kafka, no ClickHouse, no I/O. Shared by the worker and the replay."""
