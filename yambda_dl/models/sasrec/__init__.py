"""SASRec, split by responsibility: network.py (the transformer), losses.py and negatives.py (training
objectives), memory.py (the estimate checked before training), module.py (the LightningModule and its builder)."""
