"""The workspace: where stages find each other's output under $TRON_HOME (`home`) and what lies there (`inventory`)."""
