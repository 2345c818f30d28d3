"""Read models over ClickHouse: alerts, follow-ups, the monthly dashboard."""
