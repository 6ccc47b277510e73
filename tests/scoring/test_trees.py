"""The flat trees give scikit-learn's probabilities exactly."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from scoring._trees import flatten, predict_proba


def test_flat_trees_match_predict_proba_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 6))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values take each node's learned side
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2])) > 0.3).astype(int)
    model = HistGradientBoostingClassifier(max_iter=80, max_leaf_nodes=15, random_state=0).fit(X, y)
    flat = flatten(model)
    assert flat is not None
    Z = rng.normal(size=(300, 6))
    Z[rng.random(Z.shape) < 0.2] = np.nan
    assert np.array_equal(predict_proba(flat, Z), model.predict_proba(Z)[:, 1])
