"""`user-profile` in Python: a randomuser.me result (or a whole API response) as `created_users`
rows, one output per result, field for field the Rust plugin's mapping (see
plugins/user-profile). A missing or null field is a bad record naming it."""

from weir_plugin import BadRecord, Plugin, export, str_at, text_at


def created_user(result):
    """One randomuser.me result as a `created_users` row."""
    if not isinstance(result, dict):
        raise BadRecord("a result must be a JSON object")
    address = "{} {}, {}, {}, {}".format(
        text_at(result, "/location/street/number"),
        str_at(result, "/location/street/name"),
        str_at(result, "/location/city"),
        str_at(result, "/location/state"),
        str_at(result, "/location/country"),
    )
    return {
        "id": str_at(result, "/login/uuid"),
        "first_name": str_at(result, "/name/first"),
        "last_name": str_at(result, "/name/last"),
        "gender": str_at(result, "/gender"),
        "address": address,
        "post_code": text_at(result, "/location/postcode"),
        "email": str_at(result, "/email"),
        "username": str_at(result, "/login/username"),
        "dob": str_at(result, "/dob/date"),
        "registered_date": str_at(result, "/registered/date"),
        "phone": str_at(result, "/phone"),
        "picture": str_at(result, "/picture/medium"),
    }


class UserProfile(Plugin):
    def transform(self, record):
        document = record.json()
        response = isinstance(document, dict) and "results" in document
        if response and not isinstance(document["results"], list):
            raise BadRecord("field `results` must be an array")
        outputs = []
        for index, result in enumerate(document["results"] if response else [document]):
            try:
                row = created_user(result)
            except BadRecord as error:
                raise BadRecord(f"results[{index}]: {error}" if response else str(error)) from None
            out = record.with_json(row)
            out.key = row["id"].encode()
            outputs.append(out)
        return outputs


WitWorld = export(UserProfile)
