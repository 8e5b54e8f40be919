"""The accuracy-predictor search's parts (*Pruning LLMs via Accuracy Predictor*): the search
space of per-block structured ratios and its sampler (``space``), LightGBM fits with k-fold
validation (``fit``) and the per-block parameter layout (``layout``). The proposer that runs
them is ``engine/study/proposers/predictor.py``."""
