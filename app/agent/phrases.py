"""What OCTI says or shows to callers besides its answers, in French, in one place."""

RECORDING_NOTICE = "Cet appel est enregistré pour améliorer notre service."
TIME_UP_GOODBYE = "Nous arrivons au bout du temps prévu pour cet échange. Merci de votre appel, au revoir !"
GOODBYE = "Merci de votre appel, au revoir et bonne journée !"
STILL_THERE = "Vous êtes toujours là ?"
SILENCE_GOODBYE = "Je ne vous entends plus. Rappelez-moi quand vous voulez, au revoir !"
NOTHING_TO_REPEAT = "Je n'ai encore rien à répéter. Quelle est votre question ?"
NO_PERSON = "Aucun conseiller n'est joignable par ce moyen pour le moment."
SMS_RECAP_HEADER = "OCTI - ce qu'il faut retenir de votre appel :"
SMS_RECAP_PROMISED = "Le récapitulatif partira par SMS à la fin de l'appel."
NO_SMS = "Les SMS ne sont pas disponibles sur cette ligne."
SMS_BY_PHONE_ONLY = "Le récapitulatif par SMS n'est envoyé qu'après un appel téléphonique."
EXCHANGES_RECAP_HEADER = "Vos questions et les réponses d'OCTI :"
RECAP_INSTRUCTIONS = (
    "L'appel est terminé. Rédige en français un récapitulatif des conseils que tu as donnés à l'éleveur "
    "pendant cet appel : trois à cinq points courts, sans introduction. N'invente rien qui n'a pas été dit.")
LIMIT_REACHED = "La conversation a atteint sa durée maximale. Vous pouvez en démarrer une nouvelle."
UNAVAILABLE = "OCTI est momentanément indisponible. Réessayez dans quelques instants."


def limit_warning(seconds: int) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        left = f"{seconds // 60} minute{'s' if seconds >= 120 else ''}"
    else:
        left = f"{seconds} seconde{'s' if seconds > 1 else ''}"
    return f"Il nous reste {left} avant la fin de cette conversation."
TRANSFERRING = "Je vous passe un conseiller. Ne quittez pas."
ADVISORS_CLOSED = ("Les conseillers ne sont pas joignables à cette heure-ci. Votre demande est notée : "
                   "un conseiller vous rappellera.")
TRANSFER_FAILED = "Le transfert vers un conseiller n'a pas abouti."
TRANSFER_BY_PHONE_ONLY = "On ne peut joindre un conseiller que par téléphone."
STILL_LISTENING = "Je reste à votre écoute."
CALLBACK_NOTED = "C'est noté : un conseiller vous rappellera."
# Said by Twilio (TwiML) once the caller has left OCTI for the advisor's line.
VOICEMAIL_PROMPT = ("Le conseiller n'a pas pu prendre votre appel. Laissez votre question après le bip, "
                    "puis raccrochez : il vous rappellera.")
VOICEMAIL_SAVED = "Merci, votre message est enregistré. Un conseiller vous rappellera. Au revoir."
UNREACHABLE_VOICEMAIL = ("Bonjour, vous êtes bien sur la ligne OCTI. Notre assistant est momentanément "
                         "indisponible. Laissez votre question après le bip, puis raccrochez : "
                         "un conseiller vous rappellera.")
FAILURE_VOICEMAIL = ("Désolé, OCTI rencontre un problème technique. Laissez votre question après le bip, "
                     "puis raccrochez : un conseiller vous rappellera.")
# A call-back OCTI placed: left on an answering machine (TwiML), or OCTI's first words to the farmer.
CALL_BACK_MACHINE_MESSAGE = ("Bonjour, ici OCTI, l'assistant avicole de votre coopérative. Nous vous rappelons "
                             "au sujet de votre question. Rappelez-nous quand vous voulez.")


def call_back_greeting(question: str) -> str:
    question = question.strip().rstrip(".?! ")
    if not question:
        return "Bonjour, ici OCTI, je vous rappelle au sujet de votre question. Je vous écoute."
    return f"Bonjour, ici OCTI, je vous rappelle au sujet de votre question : {question}. Je vous écoute."


def greeting(configured: str, call_back: str | None, *, recorded: bool) -> str:
    """OCTI's first words: the configured greeting, or the call-back's; callers of a recorded
    call are told so."""
    said = configured if call_back is None else call_back_greeting(call_back)
    return f"{said} {RECORDING_NOTICE}" if recorded else said
