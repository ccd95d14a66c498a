"""Alerts: rules in a TOML file (rules.py), evaluated by the leader (evaluate.py), their firing
state replicated so that a failover neither repeats nor forgets one, sent to webhooks, Slack and
e-mail (sinks.py). docs/alerts.md describes them."""
