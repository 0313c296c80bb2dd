import os

# Keras reads its backend once, at import: set it before any test module imports keras.
os.environ.setdefault("KERAS_BACKEND", "torch")
