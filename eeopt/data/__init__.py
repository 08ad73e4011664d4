"""Offline loaders for the real data sets eeopt ships demos and tests with (Fashion-MNIST;
tweets tokenized for MiniLM), and for labelled data given by name or as an ``.npz``."""

from __future__ import annotations

from eeopt.data.fashion_mnist import CLASSES, load_fashion_mnist
from eeopt.data.labelled import load_labelled
from eeopt.data.registry import DATASETS, load_dataset
from eeopt.data.tweets import load_tweets, tweets_info

__all__ = ["CLASSES", "DATASETS", "load_dataset", "load_fashion_mnist", "load_labelled",
           "load_tweets", "tweets_info"]
