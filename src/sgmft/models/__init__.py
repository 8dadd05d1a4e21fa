"""SG-MFT and the compared methods as one wrapper (inputs -> SIM -> fusion -> head), the
registries of fusion modules and heads, the rows of the paper's tables as variants, and the
unimodal probes with the decision-level fallback."""
