"""PromQL, rule evaluation and drift statistics for MonitorPolicy."""
