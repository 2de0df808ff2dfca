"""The sample inventory's WSDL and its types (sandbox/soap_inventory.py): document/literal SOAP 1.1.

The types sit inside the WSDL, or in a document of their own that the WSDL imports from another address, as some
services publish them (the inventory's side door `/_control/documents` chooses), so a client can be seen to fetch a
document from another host.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

NS = "urn:gatehouse:sandbox:inventory"

WSDL_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="Inventory" targetNamespace="{ns}"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{ns}">
  <wsdl:types>
{types}
  </wsdl:types>
{messages}
  <wsdl:portType name="InventoryPortType">
{port_operations}
  </wsdl:portType>
  <wsdl:binding name="InventoryBinding" type="tns:InventoryPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
{binding_operations}
  </wsdl:binding>
  <wsdl:service name="InventoryService">
    <wsdl:port name="InventoryPort" binding="tns:InventoryBinding">
      <soap:address location="{location}"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""

# The inventory's types: inside the WSDL, or a document of their own that the WSDL imports (/_control/documents).
SCHEMA_TEMPLATE = """    <xsd:schema targetNamespace="{ns}" elementFormDefault="qualified"{declare}>
      <xsd:complexType name="Item">
        <xsd:sequence>
          <xsd:element name="sku" type="xsd:string"/>
          <xsd:element name="name" type="xsd:string"/>
          <xsd:element name="quantity" type="xsd:int"/>
          <xsd:element name="warehouse" type="xsd:string"/>
          <xsd:element name="version" type="xsd:int"/>
          <xsd:element name="updatedAt" type="xsd:dateTime"/>
        </xsd:sequence>
      </xsd:complexType>
      <xsd:element name="GetItem">
        <xsd:complexType><xsd:sequence><xsd:element name="sku" type="xsd:string"/></xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="GetItemResponse">
        <xsd:complexType><xsd:sequence><xsd:element name="item" type="tns:Item"/></xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="ListItems">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="warehouse" type="xsd:string" minOccurs="0"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="ListItemsResponse">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="item" type="tns:Item" minOccurs="0" maxOccurs="unbounded"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="SetQuantity">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="sku" type="xsd:string"/>
          <xsd:element name="quantity" type="xsd:int"/>
          <xsd:element name="requestId" type="xsd:string" minOccurs="0"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="SetQuantityResponse">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="sku" type="xsd:string"/>
          <xsd:element name="before" type="xsd:int"/>
          <xsd:element name="after" type="xsd:int"/>
          <xsd:element name="version" type="xsd:int"/>
          <xsd:element name="replayed" type="xsd:boolean"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="Ping"><xsd:complexType><xsd:sequence/></xsd:complexType></xsd:element>
      <xsd:element name="PingResponse">
        <xsd:complexType><xsd:sequence><xsd:element name="ok" type="xsd:boolean"/></xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="ItemNotFound">
        <xsd:complexType><xsd:sequence><xsd:element name="sku" type="xsd:string"/></xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>"""

SCHEMA_IMPORT = """    <xsd:schema><xsd:import namespace="{ns}" schemaLocation="{location}"/></xsd:schema>"""
XSD_NAMESPACES = f' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{NS}"'

OPERATIONS = ("GetItem", "ListItems", "SetQuantity", "Ping")
FAULTING = ("GetItem", "SetQuantity")  # the operations that declare the ItemNotFound fault


def build_schema() -> str:
    """The types as a document of their own (GET /inventory.xsd)."""
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + SCHEMA_TEMPLATE.format(ns=NS, declare=XSD_NAMESPACES)


def build_wsdl(location: str, schema_location: str | None = None) -> str:
    messages = []
    for name in OPERATIONS:
        for suffix in ("", "Response"):
            messages.append(
                f'  <wsdl:message name="{name}{suffix}Message">'
                f'<wsdl:part name="parameters" element="tns:{name}{suffix}"/></wsdl:message>'
            )
    messages.append(
        '  <wsdl:message name="ItemNotFoundMessage"><wsdl:part name="fault" element="tns:ItemNotFound"/></wsdl:message>'
    )
    port_operations, binding_operations = [], []
    for name in OPERATIONS:
        fault = '<wsdl:fault name="ItemNotFound" message="tns:ItemNotFoundMessage"/>' if name in FAULTING else ""
        port_operations.append(
            f'    <wsdl:operation name="{name}"><wsdl:input message="tns:{name}Message"/>'
            f'<wsdl:output message="tns:{name}ResponseMessage"/>{fault}</wsdl:operation>'
        )
        soap_fault = (
            '<wsdl:fault name="ItemNotFound"><soap:fault name="ItemNotFound" use="literal"/></wsdl:fault>'
            if name in FAULTING
            else ""
        )
        binding_operations.append(
            f'    <wsdl:operation name="{name}"><soap:operation soapAction="{NS}#{name}"/>'
            '<wsdl:input><soap:body use="literal"/></wsdl:input>'
            f'<wsdl:output><soap:body use="literal"/></wsdl:output>{soap_fault}</wsdl:operation>'
        )
    if schema_location:
        types = SCHEMA_IMPORT.format(ns=NS, location=escape(schema_location, {'"': "&quot;"}))
    else:
        types = SCHEMA_TEMPLATE.format(ns=NS, declare="")
    return WSDL_TEMPLATE.format(
        ns=NS,
        types=types,
        location=escape(location, {'"': "&quot;"}),
        messages="\n".join(messages),
        port_operations="\n".join(port_operations),
        binding_operations="\n".join(binding_operations),
    )
