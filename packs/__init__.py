"""Model packs: the on-disk format (`format`), loading with onnxruntime (`loader`),
temperature fitting (`temperature`), and builders (`build_default`, `byo`)."""
