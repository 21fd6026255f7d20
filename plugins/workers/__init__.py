"""Workers you start yourself: ``wrencore worker`` and the ``queue`` backend that feeds them."""
