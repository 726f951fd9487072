"""What a reader reviews: the HTML QC report of one segmentation."""
