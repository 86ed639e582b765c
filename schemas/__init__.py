"""Avro schemas of crypto-live and their single-object codec."""
