"""What OCTI says or shows to callers besides its answers, in French, in one place."""

RECORDING_NOTICE = "Cet appel est enregistré pour améliorer notre service."
LIMIT_REACHED = "La conversation a atteint sa durée maximale. Vous pouvez en démarrer une nouvelle."
UNAVAILABLE = "OCTI est momentanément indisponible. Réessayez dans quelques instants."


def limit_warning(seconds: int) -> str:
    return f"Il nous reste {seconds} seconde{'s' if seconds > 1 else ''} avant la fin de cette conversation."
