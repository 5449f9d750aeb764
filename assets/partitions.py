"""One partition per model checkpoint. Keys are added by the checkpoint sensor (or by hand in the UI)."""

from dagster import DynamicPartitionsDefinition

checkpoint_partitions = DynamicPartitionsDefinition(name="checkpoints")
