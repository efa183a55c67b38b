"""Sequential recommendation: SASRec over a row-sharded torchrec item table (issue 26, in progress)."""
