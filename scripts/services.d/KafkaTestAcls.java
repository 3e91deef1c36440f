// The ACLs the tests of weir's authorization refusals need, for the SASL_SSL listener's SCRAM
// user, on topic and group name prefixes no other test uses. The broker allows everyone where no
// ACL matches (allow.everyone.if.no.acl.found), so only names under these prefixes are
// restricted; plaintext clients (ANONYMOUS, a super user) are never. Adding a binding that
// exists already changes nothing, so this runs at every start.
//
// Run by scripts/services as a single-file program: java -cp 'KAFKA_JARS/*' KafkaTestAcls.java
// BOOTSTRAP USER

import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaTestAcls {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: KafkaTestAcls BOOTSTRAP USER");
            System.exit(2);
        }
        String principal = "User:" + args[1];
        List<AclBinding> acls = new ArrayList<>();
        // A topic the user may see but not read.
        add(acls, principal, ResourceType.TOPIC, "weir-acl-no-read.", AclOperation.DESCRIBE, AclPermissionType.ALLOW);
        add(acls, principal, ResourceType.TOPIC, "weir-acl-no-read.", AclOperation.READ, AclPermissionType.DENY);
        // A topic the user may see but not write.
        add(acls, principal, ResourceType.TOPIC, "weir-acl-no-write.", AclOperation.DESCRIBE, AclPermissionType.ALLOW);
        add(acls, principal, ResourceType.TOPIC, "weir-acl-no-write.", AclOperation.WRITE, AclPermissionType.DENY);
        // A consumer group the user may not use.
        add(acls, principal, ResourceType.GROUP, "weir-acl-no-group.", AclOperation.READ, AclPermissionType.DENY);
        // A topic the user may read and write but whose configuration it may not see.
        for (AclOperation operation : List.of(AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE)) {
            add(acls, principal, ResourceType.TOPIC, "weir-acl-no-describe-configs.", operation, AclPermissionType.ALLOW);
        }
        add(acls, principal, ResourceType.TOPIC, "weir-acl-no-describe-configs.", AclOperation.DESCRIBE_CONFIGS, AclPermissionType.DENY);

        // Topics the user may not create: the cluster-wide right to create would allow any topic,
        // so it is denied too, and topics under no restricted prefix stay creatable because no
        // ACL matches them.
        add(acls, principal, ResourceType.CLUSTER, "kafka-cluster", AclOperation.CREATE, AclPermissionType.DENY);
        add(acls, principal, ResourceType.TOPIC, "weir-acl-no-create.", AclOperation.CREATE, AclPermissionType.DENY);

        Properties properties = new Properties();
        properties.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(properties)) {
            admin.createAcls(acls).all().get();
        }
        System.out.println("added " + acls.size() + " ACL bindings for " + principal);
    }

    private static void add(List<AclBinding> acls, String principal, ResourceType type, String prefix,
            AclOperation operation, AclPermissionType permission) {
        // The cluster has one name, matched literally.
        PatternType pattern = type == ResourceType.CLUSTER ? PatternType.LITERAL : PatternType.PREFIXED;
        acls.add(new AclBinding(
                new ResourcePattern(type, prefix, pattern),
                new AccessControlEntry(principal, "*", operation, permission)));
    }
}
