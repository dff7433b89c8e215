"""Tasks' data, the sentencepiece tokenizer and the tf.data pipeline."""
