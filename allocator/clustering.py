"""Fitting the public clustering once, before round 1 (method 1.5): k-means over TF-IDF of the
question, a one-hot domain tag and the LLM difficulty (1 - fraction of correct LLM paths).

*choice*: difficulty is 0.5 (neutral) for samples whose LLM accuracy is not known yet, so
without LLM statistics the clusters are shaped by text and domain alone. The fitted
model is the same `ClusterModel` agents use to assign their private texts locally.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from sklearn.cluster import KMeans

from lada.config import ClusteringSettings
from lada.learnability import ClusterModel, assign_clusters, cluster_features, tokenize


def fit_vocabulary(texts: list[str], max_terms: int) -> tuple[list[str], np.ndarray]:
    """The `max_terms` terms in most documents (ties alphabetical) and their smoothed IDF."""
    document_frequency: Counter[str] = Counter()
    for text in texts:
        document_frequency.update(set(tokenize(text)))
    ranked = sorted(document_frequency.items(), key=lambda item: (-item[1], item[0]))[:max_terms]
    vocabulary = [term for term, _ in ranked]
    df = np.array([count for _, count in ranked], float)
    idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
    return vocabulary, idf


def fit_cluster_model(
    questions: list[str],
    domains: list[str],
    difficulties: np.ndarray | None,
    num_clusters: int,
    seed: int,
    settings: ClusteringSettings | None = None,
) -> tuple[ClusterModel, np.ndarray]:
    """Fit k-means; returns the model and each pool sample's cluster."""
    settings = settings or ClusteringSettings()
    vocabulary, idf = fit_vocabulary(questions, settings.max_vocabulary)
    model = ClusterModel(
        vocabulary=vocabulary,
        idf=idf,
        domains=sorted(set(domains)),
        centroids=np.zeros((0, 0)),
        pool_share=np.zeros(0),
        domain_weight=settings.domain_weight,
        difficulty_weight=settings.difficulty_weight,
    )
    features = cluster_features(model, questions, domains, difficulties)
    clusters = min(num_clusters, len(questions))
    kmeans = KMeans(n_clusters=clusters, n_init=settings.n_init, random_state=seed)
    kmeans.fit(features)
    model.centroids = kmeans.cluster_centers_
    assignment = assign_clusters(model, questions, domains, difficulties)
    model.pool_share = np.bincount(assignment, minlength=clusters) / len(questions)
    return model, assignment


def model_to_json(model: ClusterModel) -> bytes:
    return json.dumps(
        {
            "vocabulary": model.vocabulary,
            "idf": model.idf.tolist(),
            "domains": model.domains,
            "centroids": model.centroids.tolist(),
            "pool_share": model.pool_share.tolist(),
            "domain_weight": model.domain_weight,
            "difficulty_weight": model.difficulty_weight,
        }
    ).encode()


def model_from_json(data: bytes) -> ClusterModel:
    raw = json.loads(data)
    return ClusterModel(
        vocabulary=raw["vocabulary"],
        idf=np.asarray(raw["idf"], float),
        domains=raw["domains"],
        centroids=np.asarray(raw["centroids"], float),
        pool_share=np.asarray(raw["pool_share"], float),
        domain_weight=raw["domain_weight"],
        difficulty_weight=raw["difficulty_weight"],
    )
