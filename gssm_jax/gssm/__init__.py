"""The model: graph structure (`graph`), named graph families (`families`), Dirichlet kernels (`kernels`), where
sequences start (`initial_state`)."""
