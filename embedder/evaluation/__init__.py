"""Evaluation: quality probes (Q/A separation, retrieval, word order, context) beside a
bag-of-words baseline, the held-out `evaluate` run, and the 2-D plot of the vectors."""
