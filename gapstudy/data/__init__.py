"""The data a source hands the loop: batches (collate, padding), preference rows read from a dataset, and the
pair log a run writes and a replay reads. The sources themselves are in gapstudy/sources.py."""
