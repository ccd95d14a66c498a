"""The task history: every node's projection of the replicated log into SQLite (writer.py,
recorder.py), and the questions it answers (queries.py). docs/history.md describes it."""
