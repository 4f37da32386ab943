"""What a run writes and reads back safely: atomic checkpoints with manifests (checkpoint, manifest),
recovery from a damaged one (recovery), the run-directory lock (runlock), plain disk-full / read-only
errors (disk), and the JSONL logs cut back on resume (logs)."""
