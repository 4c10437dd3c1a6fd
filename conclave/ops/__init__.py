"""Operations: structured logging, metrics, call detail records, health."""
