"""What OpenAI's spec requires of the objects every provider answers with.

Nullable fields are required too: they must be sent as ``null``, not left out. Tests of
every provider check raw answers against these, so a mapping that drops a field fails.
"""

REQUIRED_JOB_FIELDS = frozenset(
    {
        "id",
        "object",
        "created_at",
        "error",
        "fine_tuned_model",
        "finished_at",
        "hyperparameters",
        "model",
        "organization_id",
        "result_files",
        "seed",
        "status",
        "trained_tokens",
        "training_file",
        "validation_file",
    }
)
REQUIRED_FILE_FIELDS = frozenset({"id", "object", "bytes", "created_at", "filename", "purpose"})
