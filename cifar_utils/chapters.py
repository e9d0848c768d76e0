"""The chapters that train, by id (the notebook's file name without ``.ipynb``), in the book's order."""

CH1, CH2, CH3, CH4, CH5, CH6 = ("01_architectures", "02_ablations", "03_training_choices", "04_gradcam_best_model",
                                "05_batchnorm", "06_dessilbi")
CHAPTERS: tuple[str, ...] = (CH1, CH2, CH3, CH4, CH5, CH6)
