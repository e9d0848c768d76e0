"""cifar_utils."""
