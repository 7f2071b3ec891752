"""Small shared tools with no pipeline knowledge: atomic files, parallel xz blocks, merged layer trees."""
