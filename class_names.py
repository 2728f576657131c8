"""Class-name files: the one reader, with one rule, for every file that names a model's classes.

    labels.txt                   the converted folder's (convert_tfrecord.py writes it)
    caffe_to_npy --labels FILE   e.g. synset_words.txt, categories_places365.txt
    data/imagenet_classes.txt    validate_alexnet_on_imagenet.py's ImageNet names

The rule: line i names class i (UTF-8; a byte-order mark is allowed). Spaces, tabs and the line's
end are stripped from both ends of a name. Blank lines after the last name are ignored; a blank
line before it is an error, since it would shift every class after it by one. A file in the form
of the Places category files, every line `/<letter>/<name> <index>` (`/a/airfield 0`,
`/a/apartment_building/outdoor 8`), names class <index> `<name>`; its indices must be 0, 1, 2 ...
each once.

No TensorFlow and no numpy here: the converter and the command lines read class names before
TensorFlow loads.
"""
import re

from errors import UserError

PLACES_LINE = re.compile(r'/[a-z]/(\S+) (\d+)')


class ClassNamesError(UserError):
    """A class-name file that can't be read by the rule; the message names the file and why."""


def read(path):
    """The class names in `path`, in class order (the rule in the module docstring)."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as error:
        raise ClassNamesError('cannot read the class names %s (%s)' % (
            path, getattr(error, 'strerror', None) or error)) from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ClassNamesError('%s holds no class names: expected one name per line' % path)
    if '' in lines:
        raise ClassNamesError('%s: line %d is blank, which would shift the classes after it by '
                              'one: remove it' % (path, lines.index('') + 1))
    places = [PLACES_LINE.fullmatch(line) for line in lines]
    if not all(places):
        return lines
    indices = [int(match.group(2)) for match in places]
    if sorted(indices) != list(range(len(lines))):
        raise ClassNamesError('%s: the indices of its /<letter>/<name> <index> lines are not 0 '
                              'to %d, each once' % (path, len(lines) - 1))
    names = [None] * len(lines)
    for match, index in zip(places, indices):
        names[index] = match.group(1)
    return names
