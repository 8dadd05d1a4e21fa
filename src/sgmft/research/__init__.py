"""Research on top of training and evaluation: the search (`study`, `space`), the paper's tables
(`reproduce`) and the reference rows every table carries (`references`)."""
