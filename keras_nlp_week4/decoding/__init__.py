"""Keras-side decoding: greedy (in-graph, with the cache), beam search and sampling."""

from keras_nlp_week4.decoding.greedy import greedy_generate
from keras_nlp_week4.decoding.search import METHODS, generate

__all__ = ["METHODS", "generate", "greedy_generate"]
