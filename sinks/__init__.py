"""Writers into ClickHouse: one client (chDB embedded or a server), migrations, batching sinks."""
