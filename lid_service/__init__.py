"""The language-identification service: a SpeechBrain EncoderClassifier behind gRPC."""
