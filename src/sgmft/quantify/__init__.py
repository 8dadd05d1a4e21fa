"""Quantification: the shares of the labels in a group of posts, with intervals, rather than the
label of each post (Forman 2008; Saerens, Latinne and Decaestecker 2002; González et al. 2017).

``rates`` holds the model's error rates, measured on held-out posts; ``estimators`` the methods
(cc, pcc, acc, pacc, emq), each over many groups at once.
"""
