// `user-profile` in JavaScript: a randomuser.me result (or a whole API response) as
// `created_users` rows, one output per result, field for field the Rust plugin's mapping (see
// plugins/user-profile). A missing or null field is a bad record naming it.

import { BadRecord, Plugin, exportPlugin, strAt, textAt } from "./weir-plugin.js";

export function createdUser(result) {
  if (result === null || typeof result !== "object" || Array.isArray(result)) {
    throw new BadRecord("a result must be a JSON object");
  }
  const address = [
    `${textAt(result, "/location/street/number")} ${strAt(result, "/location/street/name")}`,
    strAt(result, "/location/city"),
    strAt(result, "/location/state"),
    strAt(result, "/location/country"),
  ].join(", ");
  return {
    id: strAt(result, "/login/uuid"),
    first_name: strAt(result, "/name/first"),
    last_name: strAt(result, "/name/last"),
    gender: strAt(result, "/gender"),
    address,
    post_code: textAt(result, "/location/postcode"),
    email: strAt(result, "/email"),
    username: strAt(result, "/login/username"),
    dob: strAt(result, "/dob/date"),
    registered_date: strAt(result, "/registered/date"),
    phone: strAt(result, "/phone"),
    picture: strAt(result, "/picture/medium"),
  };
}

class UserProfile extends Plugin {
  transform(record) {
    const document = record.json();
    const response = document !== null && typeof document === "object" &&
      !Array.isArray(document) && Object.hasOwn(document, "results");
    if (response && !Array.isArray(document.results)) {
      throw new BadRecord("field `results` must be an array");
    }
    return (response ? document.results : [document]).map((result, index) => {
      let row;
      try {
        row = createdUser(result);
      } catch (error) {
        if (response && error instanceof BadRecord) {
          throw new BadRecord(`results[${index}]: ${error.message}`);
        }
        throw error;
      }
      const out = record.withJson(row);
      out.key = new TextEncoder().encode(row.id);
      return out;
    });
  }
}

export const { init, transform } = exportPlugin(UserProfile);
