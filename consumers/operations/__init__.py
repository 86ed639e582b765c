"""Operations tools over the engine: replay, lag, the S3 archive, start positions."""
