"""Every error the package raises on purpose, so callers can catch by kind."""


class MMDERError(Exception):
    """Base class of all mmder_tf errors."""


class ConfigError(MMDERError, ValueError):
    """An argument or setting that cannot work (raised before any work starts)."""


class CheckpointError(MMDERError):
    """A checkpoint that is not one, or does not fit the model."""


class TrainingDivergedError(MMDERError):
    """The loss became NaN or infinite: the weights are garbage, so nothing is reported as a result."""


class DatasetError(MMDERError):
    """A dataset folder, manifest, label or fold that cannot be used."""


class MediaError(MMDERError):
    """A media file that cannot be turned into a model input. Always names the file."""

    def __init__(self, path, message):
        self.path = str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


class EmptyFileError(MediaError):
    """The file has zero bytes."""


class CorruptMediaError(MediaError):
    """The container or its streams cannot be read."""


class UnsupportedCodecError(MediaError):
    """The container is readable but no decoder exists for a needed stream."""


class NoVideoStreamError(MediaError):
    """The file has no video stream (for example an audio-only file)."""


class NoAudioStreamError(MediaError):
    """The file has no audio stream, and the strategy needs one."""


class ClipTooShortError(MediaError):
    """Too few decodable frames or samples to sample the requested frames."""


class ClipTooLongError(MediaError):
    """The clip (or segment) is longer than the decoder's limit (media.decode.MAX_CLIP_SECONDS or max_seconds)."""
