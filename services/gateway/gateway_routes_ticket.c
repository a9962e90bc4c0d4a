/*
 * gateway_routes_ticket — the REST API of ward-ticket (SPEC §4 ticket rows) as
 * rows of the gateway's route table (format: gateway_routes.h; messages:
 * proto/ticket.proto). Who may call what is decided by ward-ticket's method table
 * (roles, API scopes), not here; a ticket that is not the caller's answers 404.
 *
 * Attachments:
 *  - download: GET .../attachments/{aid} has ROUTE_RAW_REPLY. Its reply is a
 *    ward.AttachmentDownload {filename, content_type, content}; the gateway sends
 *    content as the body with Content-Type: content_type (sniffed by ward-ticket,
 *    never text/html), Content-Disposition: attachment; filename*=UTF-8''<pct-
 *    encoded filename>, and X-Content-Type-Options: nosniff (on every response).
 *  - upload: POST .../attachments takes ward.AttachmentCreateRequest as JSON whose
 *    content is base64 (pbjson decodes bytes fields). ward-ticket checks the
 *    decoded size against limits.attachment_max_bytes (422 naming "content");
 *    the route's cap only bounds what the gateway reads: base64 of the largest
 *    attachment an envelope can carry (ENVELOPE_MAX_PAYLOAD) plus the JSON.
 */
#include "gateway_routes.h"
#include "ticket.pb-c.h"

/* A JSON body for a ticket or message holds at most one 256 KiB body (the
 * service's default limit, which it checks itself) plus a little. */
#define TICKET_ROUTE_BODY_MAX (300 * 1024)
#define TICKET_ROUTE_UPLOAD_MAX (1400 * 1024)

const struct gateway_route gateway_routes_ticket[] = {
    {"POST", "/api/v1/tickets", "q:ticket", "ticket.create",
     &ward__ticket_create_request__descriptor, &ward__ticket__descriptor, 0, 201,
     TICKET_ROUTE_BODY_MAX},
    {"GET", "/api/v1/tickets", "q:ticket", "ticket.list", &ward__ticket_list_request__descriptor,
     &ward__ticket_list_reply__descriptor, 0, 200, 0},
    {"GET", "/api/v1/tickets/{id}", "q:ticket", "ticket.get", &ward__ticket_get_request__descriptor,
     &ward__ticket__descriptor, 0, 200, 0},
    {"PATCH", "/api/v1/tickets/{id}", "q:ticket", "ticket.update",
     &ward__ticket_update_request__descriptor, &ward__ticket__descriptor, 0, 200, 0},
    {"POST", "/api/v1/tickets/{id}/messages", "q:ticket", "message.create",
     &ward__message_create_request__descriptor, &ward__message__descriptor, 0, 201,
     TICKET_ROUTE_BODY_MAX},
    {"GET", "/api/v1/tickets/{id}/messages", "q:ticket", "message.list",
     &ward__message_list_request__descriptor, &ward__message_list_reply__descriptor, 0, 200, 0},
    {"POST", "/api/v1/tickets/{id}/attachments", "q:ticket", "attachment.create",
     &ward__attachment_create_request__descriptor, &ward__attachment__descriptor, 0, 201,
     TICKET_ROUTE_UPLOAD_MAX},
    {"GET", "/api/v1/tickets/{id}/attachments", "q:ticket", "attachment.list",
     &ward__attachment_list_request__descriptor, &ward__attachment_list_reply__descriptor, 0, 200,
     0},
    {"GET", "/api/v1/tickets/{id}/attachments/{aid}", "q:ticket", "attachment.get",
     &ward__attachment_get_request__descriptor, &ward__attachment_download__descriptor,
     ROUTE_RAW_REPLY, 200, 0},
    {"POST", "/api/v1/departments", "q:ticket", "department.create",
     &ward__department_create_request__descriptor, &ward__department__descriptor, 0, 201, 0},
    {"GET", "/api/v1/departments", "q:ticket", "department.list",
     &ward__department_list_request__descriptor, &ward__department_list_reply__descriptor, 0, 200,
     0},
};
const size_t gateway_routes_ticket_n =
    sizeof gateway_routes_ticket / sizeof gateway_routes_ticket[0];
