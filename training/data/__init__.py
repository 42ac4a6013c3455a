"""FLAME-QA: the A2-LLM training sample format (WebDataset-style tar shards), its reader/writer and the builders that
turn a sample into the backbone's token sequence with motion targets aligned to the answer's audio positions."""
