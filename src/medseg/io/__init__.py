"""Floor 3: reading images and writing masks, one reader and one writer per backend, one geometry convention.

    from medseg.io import read_image, write_mask

    case, source = read_image("scan.nrrd")          # Case (channels first) + what writing back needs
    write_mask(label, source, "pred/")              # pred/scan.nrrd: same size, spacing, origin, direction

Backends: NIfTI (nibabel, ``io.nifti``), NRRD/MHA/MHD/GIPL (SimpleITK, ``io.itk``), DICOM series
(pydicom, ``io.dicom`` + ``io.dicom_input``), DICOM-SEG (highdicom, ``io.dicom_seg``),
PNG/TIFF/BMP/JPEG (Pillow, ``io.raster``), Kaggle RLE CSV (``io.rle``). The geometry convention and
the only ITK ↔ affine conversion are in ``io.geometry``; label checks and value conventions
(0/255 masks) in ``io.labels``.
"""

from medseg.io.read import read_array, read_file, read_image, read_images, read_label, read_mask, read_volume
from medseg.io.source import OUTPUT_FORMATS, Source, check_format, image_stem, image_suffix
from medseg.io.write import write_mask

__all__ = [
    "OUTPUT_FORMATS",
    "Source",
    "check_format",
    "image_stem",
    "image_suffix",
    "read_array",
    "read_file",
    "read_image",
    "read_images",
    "read_label",
    "read_mask",
    "read_volume",
    "write_mask",
]
