"""Pure feature logic: DataFrame -> DataFrame. No config files, sessions or paths here."""
