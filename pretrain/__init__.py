"""MAST and VICReg pretraining: views, model, losses, optimisation, training loop."""
