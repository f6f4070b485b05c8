"""FOSC Lab trainer: FOSC-instrumented adversarial training (Wang et al., ICML 2019)."""
