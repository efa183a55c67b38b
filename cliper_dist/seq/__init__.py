"""Sequential recommendation: SASRec over a row-sharded torchrec item table (docs/sequential.md)."""
