"""A fast supervised classifier over case text, trained by the update cycle on labelled cases: its
per-diagnosis log-probabilities are one evidence group of the fusion. Also the simple reference classifiers
that every diagnosis evaluation reports beside kbservice. scikit-learn is imported only in this room."""
